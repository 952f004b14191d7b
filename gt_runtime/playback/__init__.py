"""Playback: a bundle ready to play (`Player`), streaming (`Session`), the frame pipeline,
the scene (background, torso, camera track) and the mp4 writer."""
