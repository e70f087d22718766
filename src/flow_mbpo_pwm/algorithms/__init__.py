"""PWM: the epoch (pwm.py), return targets (returns.py), running statistics (running_stats.py)."""
