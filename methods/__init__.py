"""Editors behind one interface (``methods.base.Editor``).  Importing this package registers the built-ins."""
from methods.base import Budget, EditContext, Editor, EditorError, EditorMeta  # noqa: F401

# built-in editors register themselves on import (one line each)
from methods import identity  # noqa: F401,E402
from methods import oracle  # noqa: F401,E402
from methods import sagan  # noqa: F401,E402
from methods import l2mgan  # noqa: F401,E402
from methods.interfacegan import editor as _interfacegan  # noqa: F401,E402
