/* The lock (kind 1): registry, guard takeover, repair, bounded barging, waiting. See README.md. */
#define KIND K_LOCK
#include "wh.pml"
