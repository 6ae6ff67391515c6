"""Config plumbing shared by every layer: the typed-config base (`base.StrictModel`) and recipe files
(`loader`: shipped names or YAML paths, `key=value` overrides, readable validation errors).

The recipe schemas of the stages live with the stages (`pruneofa.stages.recipes`)."""
