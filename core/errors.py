"""The errors atman-onnx raises for bad input: each carries a one-line message that names the problem."""


class AtmanError(Exception):
    """Base class: the command line prints these as one line, without a traceback."""


class ContractError(AtmanError):
    """An exported folder is missing, incomplete, or of another graph-contract version."""


class InputError(AtmanError):
    """A prompt, target or option the explainer cannot work with."""


class ProviderError(AtmanError):
    """An execution provider that is unknown or cannot be used here."""


class ClusterError(AtmanError):
    """A Ray cluster that cannot be reached or used, or a worker on it that failed."""


class NumericError(AtmanError):
    """A graph whose outputs are not finite numbers (an overflow), which would make the relevance meaningless."""
