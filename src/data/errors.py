"""The one exception type the data pipeline raises for user-fixable problems (bad records, bad config)."""


class DataError(ValueError):
    """A problem with the user's data or data config. The message names the file/record and the fix."""
