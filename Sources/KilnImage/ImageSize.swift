/// An image size as the command lines take it: "HxW" (for example `224x224`) or "N" for N×N, each side 1...65536.
public func parseImageSize(_ text: String) -> (height: Int, width: Int)? {
    let parts = text.lowercased().split(separator: "x", omittingEmptySubsequences: false).map { Int($0) }
    let sides = 1...(1 << 16)
    if parts.count == 1, let n = parts[0], sides.contains(n) { return (n, n) }
    if parts.count == 2, let h = parts[0], let w = parts[1], sides.contains(h), sides.contains(w) { return (h, w) }
    return nil
}
