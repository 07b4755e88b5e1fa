"""Reflow sandbox SDK for Python actors (runs inside the guest).

Scripts use ``from reflow import actor`` (the worker also provides `actor`
as a builtin, so scripts written for Reflow run unchanged).
"""

from .actor import ActorError, ActorMetadata, actor, find_actor
from .context import ActorContext, ActorState

__all__ = ["actor", "ActorContext", "ActorState", "ActorError", "ActorMetadata", "find_actor"]
