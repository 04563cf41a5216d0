"""Booking: holds on slots and seats, bookings, their state machine, capacity and the
cancellation policy (DESIGN §3, §6; docs/booking.md)."""
