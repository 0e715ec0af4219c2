// The console's script: filled in by the live-console work.
