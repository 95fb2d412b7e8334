"""The wire: message schema (each field declared once), codec, replay guard, CURVE transport."""
