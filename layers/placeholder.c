/* Keeps the layers library non-empty until its first sources land. */
int as_layers_placeholder_(void);
int as_layers_placeholder_(void) { return 0; }
