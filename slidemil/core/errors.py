"""Specific exceptions. Every message names the file, slide or row at fault and says what to do."""


class SlidemilError(Exception):
    """Base class: an error the user can fix; the CLI prints its message without a traceback."""


class ParamsError(SlidemilError):
    """`params.yaml` (or a `--set` override) is malformed: unknown key, wrong type, bad value."""


class CohortError(SlidemilError):
    """The cohort table is malformed (blank or duplicate IDs, conflicting labels, …)."""


class SlideError(SlidemilError):
    """One slide cannot be processed (unreadable, no usable mpp, resolution too coarse, …).

    Batch stages catch it, record ``status``/``reason`` for that slide and go on with the cohort.
    """


class StoreError(SlidemilError):
    """A feature or tile store is missing, incomplete, locked or of an unknown schema version."""


class LeakageError(SlidemilError):
    """A patient appears in two parts of a fold, or splits and features disagree."""


class UnknownPluginError(SlidemilError, KeyError):
    """A registry name (encoder, MIL head, probe) that is not registered; the message lists the known ones."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class StaleInputError(SlidemilError):
    """An input was made from other inputs than the current ones, or by a run that did not finish; the
    message names the stage to re-run (see ``slidemil.core.provenance``)."""
