"""Reviews of completed bookings (they drive the provider's rating and the search
rating sort) and the session evaluations of coach/mentor programs."""
