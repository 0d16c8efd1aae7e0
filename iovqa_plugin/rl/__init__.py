"""Reinforcement learning for quality (GRPO): settings, answers, rewards, the loss and closed-set rollouts."""
