"""Start-up of inference processes (monai_tumor.startup), each case in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest


def _run(code: str) -> dict[str, object]:
    """Run ``code`` in a fresh interpreter; it prints one JSON object as its last line."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_monai_imports_without_the_hidden_extras_then_they_import_again() -> None:
    out = _run(
        """
        import json, sys
        from monai_tumor.startup import import_monai_for_inference
        first = import_monai_for_inference()
        hidden = "ignite" in sys.modules or "matplotlib.pyplot" in sys.modules
        from monai.inferers import SlidingWindowInferer
        from monai.transforms import Compose, Spacingd
        from monai.bundle import ConfigParser
        parser = ConfigParser({"t": {"_target_": "ScaleIntensityRange", "a_min": 0, "a_max": 1,
                                     "b_min": 0, "b_max": 1}})
        made = type(parser.get_parsed_content("t")).__name__
        import ignite.engine  # hidden only while MONAI was imported
        import matplotlib.pyplot
        second = import_monai_for_inference()
        print(json.dumps({"first": first, "hidden_loaded": hidden, "made": made,
                          "second": second, "finders": len(sys.meta_path)}))
        """
    )
    assert out["first"] is True
    assert out["hidden_loaded"] is False
    assert out["made"] == "ScaleIntensityRange"
    assert out["second"] is False  # MONAI already there: nothing changes


def test_nothing_is_hidden_when_monai_is_already_imported() -> None:
    out = _run(
        """
        import json, sys
        import monai
        from monai_tumor.startup import import_monai_for_inference
        print(json.dumps({"called": import_monai_for_inference(),
                          "ignite": "ignite" in sys.modules}))
        """
    )
    assert out == {"called": False, "ignite": True}


@pytest.mark.parametrize("user_setting", [None, "1"])
def test_prepare_freezes_the_import_heap_and_sets_numpy_advice(user_setting: str | None) -> None:
    env_line = (
        "" if user_setting is None else f"os.environ['NUMPY_MADVISE_HUGEPAGE'] = '{user_setting}'"
    )
    out = _run(
        f"""
        import gc, json, os, sys
        {env_line}
        import numpy as np
        from monai_tumor.startup import prepare_inference_process
        prepare_inference_process()
        advice = bool(np._core.multiarray._set_madvise_hugepage(True))  # returns the old one
        print(json.dumps({{"frozen": gc.get_freeze_count(), "gc": gc.isenabled(),
                          "pipeline": "monai_tumor.pipeline" in sys.modules,
                          "ignite": "ignite" in sys.modules, "advice": advice}}))
        """
    )
    frozen = out["frozen"]
    assert isinstance(frozen, int) and frozen > 100_000  # torch, MONAI and the pipeline
    assert out["gc"] is True
    assert out["pipeline"] is True and out["ignite"] is False
    # off by default; numpy's own variable, when the user set it, wins
    assert out["advice"] is (user_setting == "1")


@pytest.mark.parametrize(
    ("argv", "user_policy", "prepared", "policy", "exit_code"),
    [
        (["--help"], None, False, None, 0),
        (["scan", "--help"], None, False, None, 0),
        # an inference command is prepared before its arguments are parsed (a usage error
        # here, exit 2, since none are given) ...
        (["infer"], None, True, None, 2),
        (["batch"], None, True, "PASSIVE", 2),
        (["batch"], "ACTIVE", True, "ACTIVE", 2),  # the user's setting wins
        # ... but not when it only prints its help
        (["infer", "--help"], None, False, None, 0),
        (["batch", "--bundle", "b", "--help"], None, False, None, 0),
    ],
)
def test_the_console_entry_prepares_inference_commands_only(
    argv: list[str], user_policy: str | None, prepared: bool, policy: str | None, exit_code: int
) -> None:
    out = _run(
        f"""
        import json, os, sys
        os.environ.pop("OMP_WAIT_POLICY", None)
        if {user_policy!r} is not None:
            os.environ["OMP_WAIT_POLICY"] = {user_policy!r}
        from monai_tumor.cli.main import main
        try:
            main({argv!r})
        except SystemExit as exc:
            code = exc.code
        print()
        print(json.dumps({{"code": code, "monai": "monai" in sys.modules,
                          "torch": "torch" in sys.modules, "mirp": "mirp" in sys.modules,
                          "ignite": "ignite" in sys.modules,
                          "policy": os.environ.get("OMP_WAIT_POLICY")}}))
        """
    )
    assert out["code"] == exit_code
    assert out["monai"] is prepared and out["torch"] is prepared
    assert out["mirp"] is False  # no feature workers without a bundle, nor for --help
    assert out["ignite"] is False
    assert out["policy"] == policy


@pytest.mark.parametrize(
    ("fullname", "blocked"),
    [
        ("ignite", True),
        ("ignite.engine", True),
        ("matplotlib.pyplot", True),
        ("matplotlib.pyplot.sub", True),
        ("matplotlib", False),
        ("matplotlib.figure", False),
        ("ignitex", False),
        ("numpy", False),
    ],
)
def test_module_blocker_refuses_named_modules_and_their_submodules(
    fullname: str, blocked: bool
) -> None:
    from monai_tumor.startup import ModuleBlocker

    finder = ModuleBlocker(["ignite", "matplotlib.pyplot"], "is hidden here")
    if blocked:
        with pytest.raises(ModuleNotFoundError, match=f"^{fullname} is hidden here$"):
            finder.find_spec(fullname)
    else:
        assert finder.find_spec(fullname) is None
