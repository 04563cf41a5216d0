"""Video sessions: LiveKit rooms and access tokens for confirmed bookings, attendance
from LiveKit webhooks, and the completed / no-show outcome of each lesson."""
