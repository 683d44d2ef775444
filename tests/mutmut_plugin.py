"""pytest plugin for the mutation runs only (`-p tests.mutmut_plugin`, setup.cfg [mutmut]).

mutmut 3.8 wraps every mutated function in a trampoline with `functools.wraps`, which
`inspect.signature` sees through but `inspect.getfullargspec` does not: Keras's
`Operation.__new__` reads `getfullargspec(cls.__init__).args[0]`, so every normswap layer
whose `__init__` is mutated would fail to construct (IndexError) and every mutant would be
"killed" for nothing. The `__init__` trampolines made here carry the original
`__signature__`, which `getfullargspec` honours (only `__init__`: Keras copies a bound
`build`'s attributes onto its own wrapper, where a `__signature__` with `self` would break
it). Loaded by pytest before the tests import normswap, so the mutated modules pick the
patched decorator up.
"""

import inspect

from mutmut.mutation import trampoline

_wrap_in_trampoline = trampoline.wrap_in_trampoline


def wrap_in_trampoline(mutants_dict, is_classmethod=False):
    decorate = _wrap_in_trampoline(mutants_dict, is_classmethod)

    def with_signature(function):
        wrapper = decorate(function)
        if function.__name__ == "__init__":
            wrapper.__signature__ = inspect.signature(function)
        return wrapper

    return with_signature


if getattr(trampoline.wrap_in_trampoline, "__module__", None) != __name__:
    trampoline.wrap_in_trampoline = wrap_in_trampoline
