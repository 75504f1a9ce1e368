// Whether an op validates the row indices it is given — a read of the device when they live on a GPU —
// or trusts its caller, who validated them on the host or made them itself (the bank's own sampler).
#pragma once

namespace pirl {

enum class IndexCheck { Check, Trusted };

}  // namespace pirl
