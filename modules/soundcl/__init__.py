"""soundcl: continual learning of sound classes on SpeechBrain."""
__version__ = "0.1.0"
