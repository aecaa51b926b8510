"""What every other part stands on, above ``core``: the settings, files that hold secrets, the
metrics' definitions and the callback-URL checks; and the users' Python client (HTTP only).
The reason to change is a part that several layers share, added here or moved out."""
