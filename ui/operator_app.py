"""The UI's entry point when the operator page is on (service/ui_launch.py starts this file instead
of ui/app.py): the classification page as before, plus the operator page.

Without TS_UI_OPERATOR=1 it serves the classification page alone, as ui/app.py does.
"""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `streamlit run ui/operator_app.py` from anywhere

from service.names import UI_APP  # noqa: E402
from service.operator import operator_enabled  # noqa: E402
from ui.operator_page import render  # noqa: E402

pages = [st.Page(UI_APP, title="Classify", icon=":material/image_search:", default=True)]
if operator_enabled():
    pages.append(st.Page(render, title="Operator", icon=":material/monitoring:", url_path="operator"))
st.navigation(pages).run()
