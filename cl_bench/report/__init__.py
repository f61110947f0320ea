"""Tables and the leaderboard built from result records."""
