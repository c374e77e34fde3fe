"""The prediction recorder: stores prediction records and lab results, reports live accuracy."""
