"""The UI's entry point when the operator page is on (service/local/ui_launch.py starts this file instead
of ui/app.py): the classification page as before, plus the operator page.

Without TS_UI_OPERATOR=1 it serves the classification page alone, as ui/app.py does.
"""

from __future__ import annotations

import streamlit as st

from service.names import UI_APP
from ui.operator_data import operator_enabled
from ui.operator_page import render

pages = [st.Page(UI_APP, title="Classify", icon=":material/image_search:", default=True)]
if operator_enabled():
    pages.append(st.Page(render, title="Operator", icon=":material/monitoring:", url_path="operator"))
st.navigation(pages).run()
