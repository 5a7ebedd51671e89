"""A set-up plan written as a shell script: bash for Linux and macOS workers, PowerShell for Windows.

The script runs on the worker, in its ComfyUI folder (or the folder given as its first argument), and
may be run again: a model already in place with the right sha256 is kept, a download that broke off
resumes, and a file of the same name that differs is reported, never overwritten. Each model line
comes from the workflow's metadata and each node pack line from the master's git checkout; values
pass a strict check before they get here and are quoted for the shell all the same. Comments carry
what could not be resolved, on one line each (no value can end a comment and start a command).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass

from .setup_plan import SetupPlan

FILENAMES = {"bash": "setup-worker.sh", "powershell": "setup-worker.ps1"}
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f\u2028\u2029\u0085]")

BASH_HEAD = r"""set -euo pipefail
COMFYUI_DIR="${1:-${COMFYUI_DIR:-$PWD}}"
MODELS_DIR="${MODELS_DIR:-$COMFYUI_DIR/models}"
CUSTOM_NODES_DIR="${CUSTOM_NODES_DIR:-$COMFYUI_DIR/custom_nodes}"
PYTHON="${PYTHON:-python3}"   # the worker's ComfyUI Python, for node packs' requirements
problems=0

problem() { echo "PROBLEM $*" >&2; problems=$((problems + 1)); }

sha256_of() {
  if command -v sha256sum >/dev/null 2>&1; then sha256sum "$1" | cut -d' ' -f1; else shasum -a 256 "$1" | cut -d' ' -f1; fi
}

fetch() {  # url file: resumes a file that is there already; HF_TOKEN goes to huggingface.co only
  local token=""
  case "$1" in https://huggingface.co/*) token="${HF_TOKEN:-}" ;; esac
  if command -v curl >/dev/null 2>&1; then
    if [ -n "$token" ]; then curl -fL --retry 3 --retry-delay 2 -C - -H "Authorization: Bearer $token" -o "$2" "$1"
    else curl -fL --retry 3 --retry-delay 2 -C - -o "$2" "$1"; fi
  elif [ -n "$token" ]; then wget -q -c --header="Authorization: Bearer $token" -O "$2" "$1"
  else wget -q -c -O "$2" "$1"; fi
}

model() {  # folder name url sha256-or-empty
  local dest="$MODELS_DIR/$1/$2"
  local part
  part="$(dirname "$dest")/.$(basename "$dest").download"
  if [ -e "$dest" ]; then
    if [ -z "$4" ]; then echo "kept    $1/$2 (there already; the workflow gives no hash to check)"; return 0; fi
    if [ "$(sha256_of "$dest")" = "$4" ]; then echo "ok      $1/$2"; return 0; fi
    problem "$1/$2: a different file of that name is there; it was not overwritten"; return 0
  fi
  mkdir -p "$(dirname "$dest")"
  echo "get     $1/$2"
  if ! fetch "$3" "$part"; then problem "$1/$2: the download failed; run the script again to resume it"; return 0; fi
  if [ -n "$4" ] && [ "$(sha256_of "$part")" != "$4" ]; then
    rm -f "$part"; problem "$1/$2: the download does not have the sha256 the workflow gives; deleted"; return 0
  fi
  if [ -e "$dest" ]; then rm -f "$part"; problem "$1/$2: a file of that name appeared meanwhile; it was not overwritten"; return 0; fi
  mv "$part" "$dest"
  echo "done    $1/$2"
}

node_pack() {  # folder remote commit
  local dir="$CUSTOM_NODES_DIR/$1"
  if [ -e "$dir" ] && [ ! -d "$dir/.git" ]; then problem "$dir is there but is not a git checkout; left alone"; return 0; fi
  if [ ! -d "$dir" ]; then
    echo "clone   $1"
    git clone --quiet "$2" "$dir" || { problem "$1: git clone $2 failed"; return 0; }
  fi
  if ! git -C "$dir" cat-file -e "$3^{commit}" 2>/dev/null; then
    git -C "$dir" fetch --quiet "$2" "$3" 2>/dev/null || git -C "$dir" fetch --quiet "$2" \
      || { problem "$1: git fetch $2 failed"; return 0; }
  fi
  git -C "$dir" checkout --quiet "$3" || { problem "$1: git checkout $3 failed (local changes?)"; return 0; }
  echo "ok      $1 at ${3:0:12}"
  if [ -f "$dir/requirements.txt" ] && [ -z "${SKIP_PIP:-}" ]; then
    "$PYTHON" -m pip install --quiet -r "$dir/requirements.txt" || problem "$1: pip install -r requirements.txt failed"
  fi
}
"""

BASH_TAIL = r"""
if [ "$problems" -gt 0 ]; then echo "$problems problem(s); see above" >&2; exit 1; fi
echo "The worker is ready for this workflow; restart its ComfyUI if node packs were added."
"""

POWERSHELL_HEAD = r"""param([string]$ComfyUIDir = $(if ($env:COMFYUI_DIR) { $env:COMFYUI_DIR } else { (Get-Location).Path }))
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
$ModelsDir = if ($env:MODELS_DIR) { $env:MODELS_DIR } else { Join-Path $ComfyUIDir 'models' }
$CustomNodesDir = if ($env:CUSTOM_NODES_DIR) { $env:CUSTOM_NODES_DIR } else { Join-Path $ComfyUIDir 'custom_nodes' }
$Python = if ($env:PYTHON) { $env:PYTHON } else { 'python' }   # the worker's ComfyUI Python, for node packs' requirements
$script:Problems = 0

function Report-Problem([string]$Text) { Write-Warning "PROBLEM $Text"; $script:Problems++ }

function Get-Sha256([string]$Path) { (Get-FileHash -Algorithm SHA256 -LiteralPath $Path).Hash.ToLowerInvariant() }

function Get-Model([string]$Folder, [string]$Name, [string]$Url, [string]$Sha256) {
  $dest = Join-Path (Join-Path $ModelsDir $Folder) ($Name -replace '/', '\')
  $dir = Split-Path -Parent $dest
  $part = Join-Path $dir ('.' + (Split-Path -Leaf $dest) + '.download')
  if (Test-Path -LiteralPath $dest) {
    if (-not $Sha256) { Write-Host "kept    $Folder/$Name (there already; the workflow gives no hash to check)"; return }
    if ((Get-Sha256 $dest) -eq $Sha256) { Write-Host "ok      $Folder/$Name"; return }
    Report-Problem "$Folder/${Name}: a different file of that name is there; it was not overwritten"; return
  }
  New-Item -ItemType Directory -Force -Path $dir | Out-Null
  Write-Host "get     $Folder/$Name"
  try {
    $auth = @()
    if ($env:HF_TOKEN -and $Url.StartsWith('https://huggingface.co/')) { $auth = @('-H', "Authorization: Bearer $($env:HF_TOKEN)") }
    if (Get-Command curl.exe -ErrorAction SilentlyContinue) {
      & curl.exe -fL --retry 3 -C - @auth -o $part $Url
      if ($LASTEXITCODE -ne 0) { throw "curl exited with $LASTEXITCODE" }
    } else {
      $headers = @{}
      if ($auth.Count) { $headers['Authorization'] = "Bearer $($env:HF_TOKEN)" }
      Invoke-WebRequest -UseBasicParsing -Uri $Url -OutFile $part -Headers $headers
    }
  } catch { Report-Problem "$Folder/${Name}: the download failed ($_); run the script again to resume it"; return }
  if ($Sha256 -and (Get-Sha256 $part) -ne $Sha256) {
    Remove-Item -LiteralPath $part -Force
    Report-Problem "$Folder/${Name}: the download does not have the sha256 the workflow gives; deleted"; return
  }
  try { Move-Item -LiteralPath $part -Destination $dest } catch {
    Remove-Item -LiteralPath $part -Force
    Report-Problem "$Folder/${Name}: a file of that name appeared meanwhile; it was not overwritten"; return
  }
  Write-Host "done    $Folder/$Name"
}

function Install-NodePack([string]$Folder, [string]$Remote, [string]$Commit) {
  $dir = Join-Path $CustomNodesDir $Folder
  if ((Test-Path -LiteralPath $dir) -and -not (Test-Path -LiteralPath (Join-Path $dir '.git'))) {
    Report-Problem "$dir is there but is not a git checkout; left alone"; return
  }
  if (-not (Test-Path -LiteralPath $dir)) {
    Write-Host "clone   $Folder"
    & git clone --quiet $Remote $dir
    if ($LASTEXITCODE -ne 0) { Report-Problem "${Folder}: git clone $Remote failed"; return }
  }
  & git -C $dir cat-file -e "$Commit^{commit}" 2>$null
  if ($LASTEXITCODE -ne 0) {
    & git -C $dir fetch --quiet $Remote $Commit 2>$null
    if ($LASTEXITCODE -ne 0) { & git -C $dir fetch --quiet $Remote }
    if ($LASTEXITCODE -ne 0) { Report-Problem "${Folder}: git fetch $Remote failed"; return }
  }
  & git -C $dir checkout --quiet $Commit
  if ($LASTEXITCODE -ne 0) { Report-Problem "${Folder}: git checkout $Commit failed (local changes?)"; return }
  Write-Host "ok      $Folder at $($Commit.Substring(0, 12))"
  $requirements = Join-Path $dir 'requirements.txt'
  if ((Test-Path -LiteralPath $requirements) -and -not $env:SKIP_PIP) {
    & $Python -m pip install --quiet -r $requirements
    if ($LASTEXITCODE -ne 0) { Report-Problem "${Folder}: pip install -r requirements.txt failed" }
  }
}
"""

POWERSHELL_TAIL = r"""
if ($script:Problems -gt 0) { Write-Error "$($script:Problems) problem(s); see above"; exit 1 }
Write-Host 'The worker is ready for this workflow; restart its ComfyUI if node packs were added.'
"""


def comment_line(text: str) -> str:
    """One comment line: control characters and line separators become spaces."""
    return "# " + _UNPRINTABLE.sub(" ", text)


def powershell_quote(value: str) -> str:
    """A single-quoted PowerShell string: nothing inside is expanded; quotes are doubled."""
    return "'" + value.replace("'", "''").replace("\u2018", "\u2018\u2018").replace("\u2019", "\u2019\u2019") + "'"


def _header(plan: SetupPlan, usage: str) -> list[str]:
    lines = [
        comment_line(f"Prepares a ComfyUI worker {plan.title}. Made by ComfyUI Distributed GPU from the workflow's model"),
        comment_line("metadata and the master's node packs; nothing in it was guessed."),
        comment_line(usage),
        comment_line("Models go to <ComfyUI>/models/<folder>/ (MODELS_DIR overrides), node packs to <ComfyUI>/custom_nodes/."),
        comment_line("A file already in place with the right sha256 is kept; a different file of the same name is never"),
        comment_line("overwritten; a download that broke off resumes when the script runs again. Set HF_TOKEN for gated"),
        comment_line("Hugging Face files."),
    ]
    if plan.unresolved:
        lines += ["#", comment_line("Not resolved; do these by hand:")]
        lines += [comment_line(f"  - {item}") for item in plan.unresolved]
    if not plan.models and not plan.packs:
        lines += ["#", comment_line("Nothing to download or install.")]
    return lines


def _pack_notes(plan: SetupPlan) -> dict[str, list[str]]:
    return {pack.folder: [comment_line(f"{pack.folder}: {note}") for note in pack.notes] for pack in plan.packs}


@dataclass(frozen=True)
class _Shell:
    """What differs between the two scripts: the run hint, their fixed parts, commands, quoting, line ends."""

    first_lines: tuple[str, ...]
    usage: str
    head: str
    tail: str
    model_command: str
    pack_command: str
    quote: Callable[[str], str]
    newline: str


BASH = _Shell(("#!/usr/bin/env bash",), "Run it on the worker: bash setup-worker.sh [path to its ComfyUI folder]", BASH_HEAD, BASH_TAIL,
              "model", "node_pack", shlex.quote, "\n")
POWERSHELL = _Shell((), "Run it on the worker: powershell -ExecutionPolicy Bypass -File setup-worker.ps1 [-ComfyUIDir <folder>]",
                    POWERSHELL_HEAD, POWERSHELL_TAIL, "Get-Model", "Install-NodePack", powershell_quote, "\r\n")


def _render(plan: SetupPlan, shell: _Shell) -> str:
    lines = [*shell.first_lines, *_header(plan, shell.usage), "", shell.head.rstrip("\n"), ""]
    if plan.models:
        lines.append("# Models")
        for model in plan.models:
            if model.other_hash:
                lines.append(comment_line(f"{model.name}: the workflow gives a {model.other_hash.split(':')[0]} hash, not checked here"))
            args = [model.directory, model.name, model.url, model.sha256 or ""]
            lines.append(shell.model_command + " " + " ".join(shell.quote(arg) for arg in args))
        lines.append("")
    if plan.packs:
        notes = _pack_notes(plan)
        lines.append("# Custom node packs, at the master's versions")
        for pack in plan.packs:
            lines += notes[pack.folder]
            args = [pack.folder, pack.remote or "", pack.commit or ""]
            lines.append(shell.pack_command + " " + " ".join(shell.quote(arg) for arg in args))
        lines.append("")
    lines.append(shell.tail.strip("\n"))
    return shell.newline.join(lines) + shell.newline


def render_bash(plan: SetupPlan) -> str:
    return _render(plan, BASH)


def render_powershell(plan: SetupPlan) -> str:
    return _render(plan, POWERSHELL)


def render(plan: SetupPlan, shell: str) -> str:
    return render_powershell(plan) if shell == "powershell" else render_bash(plan)
