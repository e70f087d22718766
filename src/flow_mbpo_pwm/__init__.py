"""Flow-MBPO-PWM: PWM with deterministic and flow-matching world models."""

__version__ = "0.1.0"
