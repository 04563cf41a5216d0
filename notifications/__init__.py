"""Notifications: outbox events -> notification rows -> email, SMS, push, in-app; live
seat updates (SSE) fed from the outbox through Redis. See `docs/notifications.md`."""
