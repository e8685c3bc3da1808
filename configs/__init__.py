"""The Hydra config tree (YAML groups beside this file) and its typed schemas."""
