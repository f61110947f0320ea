"""Image-classification datasets: real-format readers and their registrations, and the embedded digits."""
