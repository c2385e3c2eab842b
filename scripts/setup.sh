#!/usr/bin/env bash
# Set up everything monai-tumor needs on a fresh machine; safe to rerun (fast when done).
#  1. Debian tools the tests compare against or run as real servers: dcm2niix, dcmtk
#     (storescu/echoscu), orthanc and its DICOMweb plugin (the PACS tests' Orthanc);
#     chromium, the browser the report and viewer tests drive headless (never a browser
#     downloaded by Playwright); openssl, which the TLS tests make certificates with.
#  2. A virtual environment in .venv with torch==2.13.0 (the local CPU build) installed
#     *before* the project, so pip never pulls a multi-GB CUDA build for a bare "torch".
#  3. The project itself, editable, with its dev extras.
#  4. NiiVue, the viewer's WebGL library, pinned and hash-checked in the package
#     (scripts/fetch_niivue.py; fetched with npm only when missing or different).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"

apt_packages=(dcm2niix dcmtk chromium orthanc orthanc-dicomweb openssl)
missing=()
command -v dcm2niix >/dev/null 2>&1 || missing+=(dcm2niix)
command -v storescu >/dev/null 2>&1 || missing+=(dcmtk)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v Orthanc >/dev/null 2>&1 || [ -x /usr/sbin/Orthanc ] || missing+=(orthanc)
dpkg -s orthanc-dicomweb >/dev/null 2>&1 || missing+=(orthanc-dicomweb)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)  # the DICOM TLS tests make their certificates
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "[setup] installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${apt_packages[@]}" >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)

if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
  echo "[setup] installing $TORCH_SPEC (CPU build) first"
  "${PIP[@]}" install "$TORCH_SPEC" 2>&1 | grep -v "is ignored" || true
  "$VENV/bin/python" -c "import torch" || { echo "[setup] torch failed to install" >&2; exit 1; }
fi

stamp="$VENV/.monai-tumor-installed"
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[setup] installing monai-tumor (editable, with dev extras)"
  "${PIP[@]}" install -e ".[dev]" 2>&1 | grep -v "is ignored" || true
  "$VENV/bin/python" -c "import monai_tumor, monai, pydicom, highdicom" \
    || { echo "[setup] project install failed" >&2; exit 1; }
  echo "$want" > "$stamp"
fi
if ! python3 scripts/fetch_niivue.py --check >/dev/null; then
  if ! command -v npm >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    echo "[setup] installing npm (to fetch NiiVue)"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq npm >/dev/null
  fi
fi
python3 scripts/fetch_niivue.py

echo "[setup] ready: $VENV ($("$VENV/bin/python" -c 'import torch, monai; print("torch", torch.__version__, "monai", monai.__version__)'))"
