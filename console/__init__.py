"""The web console for lab staff and operators (Streamlit); see console/README.md."""
