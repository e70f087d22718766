"""The exit codes of `flow-mbpo-pwm`, one list for the CLI's handler, `train`, `--help` and the README.

75 and 130 follow conventions a scheduler understands: 75 is EX_TEMPFAIL ("try again"; a requeued SLURM job or a
Snakemake retry continues the run), 130 is 128 + SIGINT, what a shell reports for Ctrl-C. 74 is EX_IOERR.
"""

OK = 0
BAD_INPUT = 1
INVALID_CONFIG = 2
COLLAPSED = 3
IO_ERROR = 74
PREEMPTED = 75
INTERRUPTED = 130

DEBUG_ENV = "FLOW_MBPO_PWM_DEBUG"

HELP = f"""exit codes:
  {OK:<4} success (or nothing left to do)
  {BAD_INPUT:<4} bad input to a stage: a missing, damaged or wrong-format file (checkpoint, work/state.pt, CSV,
       JSON, dataset) or records that disagree; the message names the file and what to do
  {INVALID_CONFIG:<4} invalid configuration or command line; the message names the key or option
  {COLLAPSED:<4} train: stopped by the collapse guard (see the run's work/diagnostics.json)
  {IO_ERROR:<4} the system refused to read or write a file (permission denied, a folder where a file belongs,
       disk full); the message names the path
  {PREEMPTED:<4} train: preempted by SIGTERM/SIGUSR1, state saved; rerun the same command to continue
  {INTERRUPTED:<4} interrupted by Ctrl-C (SIGINT); train saves its state first, so rerunning continues it

Errors print one line naming the problem; --debug (or {DEBUG_ENV}=1) shows the Python traceback instead."""
