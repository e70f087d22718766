"""Networks: layers, world model (deterministic and flow-matching dynamics), actor, critic ensemble."""
