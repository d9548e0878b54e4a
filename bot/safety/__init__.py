"""Clinical safety: crisis resources, and what keeps the bot from guiding work on memories."""
