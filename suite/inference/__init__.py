"""A trained run put to use: ``evaluate`` and ``predict`` through the run's own
preprocessing, and the user's arrays and files checked on the way in."""
