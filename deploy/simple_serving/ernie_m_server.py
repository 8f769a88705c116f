"""The reference's ERNIE-M entry point, kept for its command line:

    paddlenlp server ernie_m_server:app --host 0.0.0.0 --port 8189

The reference needed a second server whose handler fed only `input_ids`. Here server.py already
feeds exactly the inputs the export records (only `input_ids` for an ERNIE-M export made with
`export_model.py --multilingual`), so this is the same app, with the same settings (DEVICE,
DEVICE_ID, EXPORT_DIR).
"""
from server import app  # noqa: F401
