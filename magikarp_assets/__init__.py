"""TMagikarp: daily RL stock recommendations as Dagster software-defined assets."""
