"""The commands' plumbing: config schemas and checks, the command runner and its one error boundary, DDP job
handling, run dirs, tracking, results.json, sweep summaries, plots and timing. Imports lit/ and models/ only."""
