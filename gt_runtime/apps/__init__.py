"""Command drivers over the library: `gt play` (apps.play) and `gt profile` (apps.profile).
The CLI (gt_cli) builds their config dataclasses and calls them."""
