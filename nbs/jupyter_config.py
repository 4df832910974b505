# JupyterLab for reading the book: the README's book command loads this file (`cd nbs && jupyter lab --config=jupyter_config.py`).
# Every save, autosave included, is cleaned as `nbdev_clean` cleans (settings.ini: jupyter_hooks = True), so opening,
# running and saving a chapter leaves the clone as git has it.
import json
from pathlib import Path

def neuralwiki_clean_on_save(model, path, contents_manager, **kwargs):
    if model.get('type') != 'notebook': return
    try: from nbdev.clean import clean_jupyter
    except ImportError: return # no nbdev (not the README's venv): save as JupyterLab does
    os_path = contents_manager._get_os_path(path) # nbdev wants the file's path, not the server's relative one
    clean_jupyter(path=os_path, model=model, contents_manager=contents_manager)
    # The browser re-serialises the stored widget state with JavaScript numbers (10.0 becomes 10): keep the
    # file's own copy when it holds the same values.
    try: stored = json.loads(Path(os_path).read_text(encoding='utf-8')).get('metadata', {}).get('widgets')
    except (OSError, ValueError): return
    widgets = model['content'].get('metadata', {}).get('widgets')
    if widgets is not None and widgets == stored: model['content']['metadata']['widgets'] = stored

c.ContentsManager.pre_save_hook = neuralwiki_clean_on_save
