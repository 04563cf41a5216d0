"""Users, roles, tutor/coach/mentor profiles and availability slots."""
