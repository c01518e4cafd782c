"""Imported by wf_helper only: travels because wf_helper imports it."""

SCALE = 7
