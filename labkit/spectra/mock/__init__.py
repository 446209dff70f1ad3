"""The mock survey: physics of its sources (``sources``, ``lines``), the instruments that
observe them (``instrument``), the survey drawn from both (``survey``), and the truth table
that travels with its files (``truth``)."""

from labkit.spectra.mock.survey import ANOMALIES, MockSource, mock_source, mock_survey

__all__ = ["ANOMALIES", "MockSource", "mock_source", "mock_survey"]
