"""A module of a user's own project (not installed): tasks that use it need it shipped."""

import wf_helper_math


def scaled(x: int) -> int:
    return wf_helper_math.SCALE * x
