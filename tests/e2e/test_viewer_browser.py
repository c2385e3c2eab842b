"""The report and viewer pages in a real headless Chromium (file:// and report serve).

Each test reads what the browser shows: console errors, canvas pixels, the viewer's
crosshair state, and on a real LUNG1 result the rendered overlay against mask.nii.gz.
Set ``MONAI_TUMOR_SCREENSHOTS=DIR`` to keep the screenshots (the docs' pictures).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from monai_tumor.export.seg import SegmentSpec
from monai_tumor.geometry import patient_to_voxel, subsampled_affine
from monai_tumor.pipeline.batch import BatchOptions, run_batch
from monai_tumor.pipeline.outputs import MANIFEST_NAME
from monai_tumor.report.viewer import DISPLAY_NAME, VIEWER_NAME, read_display, write_viewer
from tests.support.browser import ConsoleLog, open_chromium, png_pixels
from tests.support.pipeline_doubles import ThresholdSegmenter, fake_bundle_info
from tests.support.viewer_cases import write_identified_series

NODULE = Path(__file__).resolve().parents[2] / "bundles" / "lung_nodule_ct"
RULES = {"selections": [{"name": "ct", "conditions": {"Modality": "(?i)^CT$"}}]}
READY_MS = 180_000
SERVE = [sys.executable, "-m", "monai_tumor.cli.main", "report", "serve"]


def _screenshot_dir() -> Path | None:
    target = os.environ.get("MONAI_TUMOR_SCREENSHOTS")
    if not target:
        return None
    Path(target).mkdir(parents=True, exist_ok=True)
    return Path(target)


def _keep(png: bytes, name: str) -> None:
    folder = _screenshot_dir()
    if folder is not None:
        (folder / name).write_bytes(png)


@pytest.fixture(scope="module")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with open_chromium(tmp_path_factory.mktemp("chromium-profile")) as context:
        yield context


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A batch output folder: one done CT series with two lesions, its report and viewer."""
    root = tmp_path_factory.mktemp("viewer-run")
    write_identified_series(root / "export" / "ct")
    rules = root / "rules.json"
    rules.write_text(json.dumps(RULES))
    out = root / "out"
    result = run_batch(
        root / "export",
        out,
        bundle=fake_bundle_info(root, selection_rules=rules),
        options=BatchOptions(progress=False, workers=1),
        segmenter=ThresholdSegmenter(),
    )
    assert [r.status.value for r in result.records] == ["done"]
    assert result.records[0].lesion_count == 2
    return out


def _series_folder(out: Path) -> Path:
    (page,) = out.glob(f"*/*/{VIEWER_NAME}")
    return page.parent


def _open_viewer(context: Any, url: str) -> tuple[Any, ConsoleLog]:
    page = context.new_page()
    log = ConsoleLog().attach(page)
    page.goto(url)
    page.evaluate("window.monaiTumorViewer.ready.then(() => true)")
    page.wait_for_function("!!window.monaiTumorViewer.nv", timeout=READY_MS, polling=250)
    return page, log


def _label_pixels(rgb: np.ndarray) -> np.ndarray:
    """Pixels tinted by the (reddish) label colour: grey image pixels have R = G = B."""
    px = rgb.astype(np.int16)
    return (px[..., 0] - np.maximum(px[..., 1], px[..., 2])) > 40


def _canvas(page: Any) -> np.ndarray:
    page.evaluate("window.monaiTumorViewer.nv.drawScene()")
    return png_pixels(page.locator("#gl").screenshot())


def test_viewer_from_file(chromium: Any, synthetic_run: Path) -> None:
    folder = _series_folder(synthetic_run)
    payload = read_display(folder / DISPLAY_NAME)
    page, log = _open_viewer(chromium, (folder / VIEWER_NAME).as_uri())
    try:
        pixels = _canvas(page)
        _keep(page.screenshot(), "viewer_synthetic.png")
        # Not blank: an image with structure, the label colour on it.
        assert pixels.std() > 10 and _label_pixels(pixels).sum() > 20
        # Lesion 1 is selected on opening; clicking lesion 2 moves the crosshair to it.
        lesions = {les["index"]: les for les in payload["lesions"]}
        assert len(lesions) == 2
        for index in (2, 1):
            page.click(f"#lesions tr.lesion[data-lesion='{index}']")
            state = page.evaluate("window.monaiTumorViewer.state()")
            expected = lesions[index]["display_index"]
            np.testing.assert_allclose(expected, lesions[index]["display_voxel"], atol=0.5)
            assert state["voxel"] == expected
            assert state["sourceVoxel"] == expected  # full resolution here
            np.testing.assert_allclose(state["lps"], lesions[index]["centroid_lps_mm"], atol=2.0)
            assert page.locator("#lesions tr.current").get_attribute("data-lesion") == str(index)
        # Per-label toggle and opacity act on the rendered overlay.
        page.uncheck("#labels input[data-label='1']")
        assert _label_pixels(_canvas(page)).sum() == 0
        page.check("#labels input[data-label='1']")
        page.evaluate("window.monaiTumorViewer.setOpacity(0)")
        assert _label_pixels(_canvas(page)).sum() == 0
        page.evaluate("window.monaiTumorViewer.setOpacity(0.6)")
        # Window presets change the picture (lung window vs mediastinum).
        before = _canvas(page)
        page.select_option("#preset", "1")
        assert np.abs(_canvas(page).astype(int) - before.astype(int)).mean() > 1
        # Every layout draws something: the three planes alone, the 3D rendering, all four.
        for layout in ("render", "axial", "coronal", "sagittal", "all"):
            page.click(f"#layouts button[data-layout='{layout}']")
            assert _canvas(page).std() > 10, layout
        assert page.evaluate("window.monaiTumorViewer.nv.opts.isOrientationTextVisible")
        assert page.locator("#where").inner_text().startswith("voxel ")
        assert not page.locator("#message").is_visible()
        assert log.errors == []
    finally:
        page.close()


COLOURS = {1: (255, 0, 0), 2: (0, 255, 0), 4: (0, 0, 255)}


def _coloured(rgb: np.ndarray, colour: tuple[int, int, int]) -> int:
    return int((np.abs(rgb.astype(int) - np.asarray(colour)).max(axis=-1) < 40).sum())


def test_mr_labels_toggle_one_by_one(chromium: Any, tmp_path: Path) -> None:
    """An MR label map with three labels (BraTS-like 1, 2, 4): each toggle hides its own."""
    shape = (48, 40, 20)
    data = torch.linspace(0.0, 3.0, int(np.prod(shape))).reshape(1, *shape)
    image = MetaTensor(data, affine=torch.eye(4, dtype=torch.float64), meta={"Modality": "MR"})
    labels = torch.zeros((1, *shape), dtype=torch.uint8)
    labels[0, 5:15, 5:15, 6:14] = 1
    labels[0, 20:30, 5:15, 6:14] = 2
    labels[0, 35:45, 5:15, 6:14] = 4
    segments = [SegmentSpec(n, f"label {n}", color_rgb=c) for n, c in COLOURS.items()]
    files = write_viewer(
        tmp_path / "series",
        image=image,
        mask=labels,
        lesions=[],
        segments=segments,
        run_dir=tmp_path,
        title="mr",
    )
    page, log = _open_viewer(chromium, files.page.as_uri())
    try:
        assert page.locator("#preset option").all_inner_texts() == ["auto"]
        page.evaluate(
            """() => { const v = window.monaiTumorViewer; v.setLayout('axial'); v.setOpacity(1);
            v.nv.setCrosshairWidth(0); v.nv.scene.crosshairPos = v.nv.mm2frac([24, 20, 10]); }"""
        )
        shown = _canvas(page)
        assert all(_coloured(shown, c) > 50 for c in COLOURS.values())
        for number, colour in COLOURS.items():
            page.uncheck(f"#labels input[data-label='{number}']")
            hidden = _canvas(page)
            assert _coloured(hidden, colour) == 0, number
            others = [c for n, c in COLOURS.items() if n != number]
            assert all(_coloured(hidden, c) > 50 for c in others), number
            page.check(f"#labels input[data-label='{number}']")
        assert log.errors == []
    finally:
        page.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def served(synthetic_run: Path) -> Iterator[str]:
    """``monai-tumor report serve OUT`` in its own process, on a free loopback port."""
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        [*SERVE, str(synthetic_run), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert f"http://127.0.0.1:{port}/index.html" in line, (line, proc.stderr)
        for _ in range(200):  # uvicorn starts accepting shortly after the line
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.parametrize("where", ["file", "serve"])
def test_report_opens_the_viewer(chromium: Any, synthetic_run: Path, served: str, where: str):
    base = synthetic_run.as_uri() if where == "file" else served
    page = chromium.new_page()
    log = ConsoleLog().attach(page)
    try:
        page.goto(f"{base}/index.html")
        _keep(page.screenshot(full_page=True), f"report_{where}.png")
        # The series table sorts and filters; its viewer link opens the page.
        table = page.locator("table.series")
        assert table.locator("tbody tr").count() == 1
        page.fill("input.filter", "status:failed")
        assert table.locator("tbody tr:visible").count() == 0
        page.fill("input.filter", "status:done")
        assert table.locator("tbody tr:visible").count() == 1
        keys = table.locator("thead th").evaluate_all("ths => ths.map(t => t.dataset.key)")
        page.click("table.series th[data-key='lesions']")
        assert table.get_attribute("data-sort-column") == str(keys.index("lesions"))
        assert page.locator("figure.plot svg rect").count() > 0
        link = table.locator(f"a[href$='/{VIEWER_NAME}']")
        assert link.count() == 1
        link.click()
        page.wait_for_url(f"**/{VIEWER_NAME}")
        page.evaluate("window.monaiTumorViewer.ready.then(() => true)")
        assert _label_pixels(_canvas(page)).sum() > 20
        assert log.errors == []
    finally:
        page.close()


def test_report_serve_refuses_other_hosts(synthetic_run: Path) -> None:
    done = subprocess.run(
        [*SERVE, str(synthetic_run), "--host", "0.0.0.0", "--port", "0"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        timeout=120,
    )
    assert done.returncode == 50 and "loopback" in done.stderr


@pytest.fixture(scope="module")
def lung1_run(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A batch of the nodule bundle on LUNG1-001 (512 x 512 x 134 CT), seeded by its RTSTRUCT."""
    out = tmp_path_factory.mktemp("lung1")
    options = BatchOptions(
        device="cpu",
        seeds_from_export=True,
        progress=False,
        workers=1,
        index_path=out / "index.sqlite",  # never inside the shared data
    )
    case = data_dir / "lung1" / "LUNG1-001"
    result = run_batch(case, out / "run", bundle=NODULE, options=options)
    assert [r.status.value for r in result.records] == ["done"]
    return out / "run"


ZOOM = 2.0


@pytest.mark.realdata
@pytest.mark.slow
def test_lung1_overlay_is_on_the_mask_voxels(chromium: Any, lung1_run: Path) -> None:
    report = chromium.new_page()
    report_log = ConsoleLog().attach(report)
    try:
        report.goto((lung1_run / "index.html").as_uri())
        _keep(report.screenshot(full_page=True), "report_lung1.png")
        assert report.locator("table.series tbody tr").count() == 1
        assert report_log.errors == []
    finally:
        report.close()
    out = _series_folder(lung1_run)
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    steps = manifest["viewer"]["steps"]
    assert steps == [2, 2, 1]  # 512 x 512 x 134 is shown at 256 x 256 x 134
    mask_nii = nib.Nifti1Image.from_filename(out / "mask.nii.gz")
    mask = np.asarray(mask_nii.dataobj)
    lesion = json.loads((out / "lesions.json").read_text())["lesions"][0]
    display_affine = subsampled_affine(mask_nii.affine, steps)
    page, log = _open_viewer(chromium, (out / VIEWER_NAME).as_uri())
    try:
        _keep(page.screenshot(), "viewer_lung1.png")
        # Lesion 1 (opened on): the crosshair is on the voxel nearest its centroid.
        state = page.evaluate("window.monaiTumorViewer.state()")
        expected_voxel = np.floor(np.asarray(lesion["centroid_voxel"]) / steps + 0.5)
        assert state["voxel"] == expected_voxel.astype(int).tolist()
        np.testing.assert_allclose(state["lps"], lesion["centroid_lps_mm"], atol=2.0)
        # One axial slice through it, the label opaque, no crosshair, at a known zoom.
        page.evaluate(
            """(zoom) => { const v = window.monaiTumorViewer; v.setLayout('axial');
            v.setOpacity(1); v.nv.setCrosshairWidth(0); v.gotoLesion(1);
            v.nv.scene.pan2Dxyzmm = [0, 0, 0, zoom]; }""",
            ZOOM,
        )
        pixels = _canvas(page)
        k = int(expected_voxel[2])
        tinted = _label_pixels(pixels)
        rows, cols = np.nonzero(tinted)
        assert len(rows) > 500, "the nodule is not visible on its axial slice"
        # Where NiiVue says each pixel of a box around the nodule is (RAS mm) ...
        top, bottom = max(rows.min() - 20, 0), min(rows.max() + 20, pixels.shape[0] - 1)
        left, right = max(cols.min() - 20, 0), min(cols.max() + 20, pixels.shape[1] - 1)
        mm = np.asarray(
            page.evaluate(
                """([t, b, l, r]) => { const nv = window.monaiTumorViewer.nv; const out = [];
                for (let y = t; y <= b; y++) for (let x = l; x <= r; x++) {
                  const f = nv.canvasPos2frac([x + 0.5, y + 0.5]);
                  out.push(Array.from(nv.frac2mm(f)).slice(0, 3)); }
                return out; }""",
                [int(top), int(bottom), int(left), int(right)],
            )
        ).reshape(bottom - top + 1, right - left + 1, 3)
        # The known zoom: NiiVue fits the 500 mm slice into the canvas, times ZOOM.
        canvas = page.evaluate("(c => [c.width, c.height])(window.monaiTumorViewer.nv.gl.canvas)")
        fov = np.asarray(mask.shape[:2]) * np.linalg.norm(mask_nii.affine[:3, :2], axis=0)
        px_per_mm = ZOOM * min(canvas[0] / fov[0], canvas[1] / fov[1])
        step_mm = np.linalg.norm(mm[0, 1] - mm[0, 0]), np.linalg.norm(mm[1, 0] - mm[0, 0])
        np.testing.assert_allclose(1 / np.asarray(step_mm), px_per_mm, rtol=0.01)
        # ... and which voxel of mask.nii.gz that is, mapped here (nibabel + geometry).
        voxel = patient_to_voxel(display_affine, mm)
        index = np.rint(voxel).astype(int)
        assert (index[..., 2] == k).all(), "the view is not the lesion's axial slice"
        src = index * np.asarray(steps)
        expected = mask[src[..., 0], src[..., 1], src[..., 2]] > 0
        shown = tinted[top : bottom + 1, left : right + 1]
        # Pixels within 1.5 pixels of a voxel border are left out: NiiVue's picking and
        # its rasteriser may round a border pixel either way.
        px_per_voxel = px_per_mm * np.linalg.norm(display_affine[:3, :2], axis=0)
        border_px = np.abs(voxel[..., :2] - np.floor(voxel[..., :2]) - 0.5) * px_per_voxel
        compared = (border_px > 1.5).all(axis=-1)
        assert expected[compared].sum() > 300
        mismatch = (expected != shown) & compared
        assert mismatch.sum() <= 0.002 * expected[compared].sum(), mismatch.sum()
        _keep(page.screenshot(), "viewer_lung1_axial.png")
        assert log.errors == []
    finally:
        page.close()
