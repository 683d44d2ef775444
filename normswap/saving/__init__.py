"""Reading and writing models, one job a module (in the spirit of keras/src/saving/):

- `loading.py`: `load_model`, the one loader (files, `keras:<Name>`, legacy fix-ups,
  safe mode);
- `file_info.py`: `describe_file`, what a file is without loading it;
- `paths.py`: checks of input and output paths before any long work;
- `load_errors.py`: Keras load failures as one line that says what to do;
- `legacy/`: one fixer per Keras 2 config that Keras 3 rejects or misreads;
- `seeds/`: one mapper per layer of a third-party Keras 2 library found in legacy files;
- `load_notes.py`: what the loader changed, recorded with the model it returned;
- `safety.py`: Python code stored in a file (Lambda layers), found before loading;
- `applications.py`: `keras:<Name>`;
- `custom_objects.py`: `--custom-objects module.py`;
- `atomic.py`: `save_model`, written to a temporary file and renamed into place;
  `save_verified`, the same with a check (verification) run while the file is written.
"""

from normswap.saving.applications import application_names
from normswap.saving.atomic import save_model, save_verified
from normswap.saving.custom_objects import load_custom_objects
from normswap.saving.file_info import describe_file
from normswap.saving.load_notes import load_notes
from normswap.saving.loading import load_model
from normswap.saving.paths import check_output_path

__all__ = ["application_names", "check_output_path", "describe_file", "load_custom_objects",
           "load_model", "load_notes", "save_model", "save_verified"]
