"""Image-text datasets: caption, MMEB and MMVP readers and their registrations, the in-memory views."""
