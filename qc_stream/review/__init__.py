"""The operator review station (`qc-stream review`): a web app where people confirm or correct
the verdicts of frames kept in the frame store."""
