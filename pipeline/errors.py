"""What can go wrong, and what a rerun does about it.

Row errors (`error_type` in the output) are data: the run goes on. They are
  - permanent: the input itself is bad, missing or forbidden, and reading it again gives the same error. A rerun
    skips these ids (their error rows stay) unless asked to retry them (`--retry-errors`);
  - transient: storage, time or a worker failed. A rerun retries these ids (their error rows go first).
Types not listed as permanent count as transient: an unknown failure is worth one more try.

Job errors: `InputError` is a configuration or input problem found before any work starts (a missing bucket
or checkpoint, an unreachable endpoint, an empty listing, an unreadable manifest); the job prints one line
naming the setting and exits 2. `SummaryError`: every row is written but the summary could not be.
"""

from __future__ import annotations

PERMANENT = frozenset(
    {
        "EmptyObject",  # zero bytes
        "TooLarge",  # over decode.max_bytes
        "TooLong",  # over decode.max_video_seconds
        "DecodeError",  # no decoder can read it
        "NoVideo",  # an audio-only file
        "NoAudio",  # no audio track, with decode.missing_audio: error
        # Storage answers that are about the object, not about the moment: reading again gives the same
        # answer until someone changes the bucket (then `--retry-errors`).
        "NotFound",  # no such object or bucket (S3 NoSuchKey / NoSuchBucket / 404; a missing local file)
        "AccessDenied",  # the object may not be read (S3 AccessDenied / 403; a local PermissionError)
    }
)
TRANSIENT = frozenset(
    {
        # throttling (503 SlowDown), other 5xx, timeouts, connection errors and rejected credentials (an expired
        # token), after storage.max_attempts tries in all
        "ReadError",
        "Timeout",  # decoding took longer than decode.timeout_seconds
        "InferenceError",  # generate() failed for this input (out of memory, a lost device, ...)
    }
)


def retryable(error_type: str | None) -> bool:
    """Whether a rerun retries an id whose row has this error type."""
    return error_type not in PERMANENT


class InputError(Exception):
    """A configuration or input problem, found before work starts: one line that names the setting."""


class SummaryError(Exception):
    """Every row is written, but the summary could not be read back or written."""

    def __init__(self, output: str, rows_written: int, cause: BaseException) -> None:
        super().__init__(
            f"all {rows_written} rows of this run are written to {output}, but the summary could not be built "
            f"({type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''}); rerun the job to write "
            "it (finished videos are skipped)"
        )
        self.output, self.rows_written = output, rows_written
