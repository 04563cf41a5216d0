"""A local HTTP stand-in of LiveKit's server API (`python -m standins.livekit --port N`)."""
