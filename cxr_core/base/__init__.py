"""Foundation: user-facing exceptions, settings from the environment, weight archives and checksums."""
