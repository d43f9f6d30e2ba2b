"""Agents: stable-baselines3 PPO, d3rlpy IQL, and our GFlowNet."""
