"""Training-time defences: DP-SGD (`dp_sgd`) and adversarial training (`adversarial`)."""
