/// Typed access to a node's attributes. A wrong type or value stops the import naming the attribute.
extension Converter {
    func attribute(_ n: ONNXNodeProto, _ name: String) -> ONNXAttribute? {
        n.attributes.last { $0.name == name }
    }

    /// Checks the declared type (files older than IR version 2 declare none).
    func checkType(_ a: ONNXAttribute, _ expected: Int, _ expectedName: String) throws(ONNXImportError) {
        guard a.type == 0 || a.type == expected else {
            throw fail("attribute '\(a.name)' is \(a.typeName), expected \(expectedName)")
        }
    }

    func int(_ n: ONNXNodeProto, _ name: String, default value: Int) throws(ONNXImportError) -> Int {
        try optionalInt(n, name) ?? value
    }

    func optionalInt(_ n: ONNXNodeProto, _ name: String) throws(ONNXImportError) -> Int? {
        guard let a = attribute(n, name) else { return nil }
        try checkType(a, 2, "INT")
        // A proto3 writer leaves a zero out: declared INT with no value is 0.
        guard let v = a.i ?? (a.type == 2 ? 0 : nil) else { throw fail("attribute '\(name)' has no integer value") }
        guard let i = Int(exactly: v) else { throw fail("attribute '\(name)' = \(v) is out of range") }
        return i
    }

    func float(_ n: ONNXNodeProto, _ name: String, default value: Float) throws(ONNXImportError) -> Float {
        guard let a = attribute(n, name) else { return value }
        try checkType(a, 1, "FLOAT")
        guard let v = a.f ?? (a.type == 1 ? 0 : nil) else { throw fail("attribute '\(name)' has no float value") }
        return v
    }

    func ints(_ n: ONNXNodeProto, _ name: String) throws(ONNXImportError) -> [Int]? {
        guard let a = attribute(n, name) else { return nil }
        try checkType(a, 7, "INTS")
        return a.ints.map { Int($0) }
    }

    func floats(_ n: ONNXNodeProto, _ name: String) throws(ONNXImportError) -> [Float]? {
        guard let a = attribute(n, name) else { return nil }
        try checkType(a, 6, "FLOATS")
        return a.floats
    }

    func string(_ n: ONNXNodeProto, _ name: String, default value: String) throws(ONNXImportError) -> String {
        guard let a = attribute(n, name) else { return value }
        try checkType(a, 3, "STRING")
        return String(decoding: a.s ?? [], as: UTF8.self)
    }

    func tensor(_ n: ONNXNodeProto, _ name: String) throws(ONNXImportError) -> ONNXTensorProto? {
        guard let a = attribute(n, name) else { return nil }
        try checkType(a, 4, "TENSOR")
        guard let t = a.t else { throw fail("attribute '\(name)' holds no tensor") }
        return t
    }

    /// A list attribute of exactly `count` entries, each at least `minimum`.
    func spatial(_ n: ONNXNodeProto, _ name: String, count: Int, default value: [Int], minimum: Int) throws(ONNXImportError) -> [Int] {
        guard let v = try ints(n, name) else { return value }
        guard v.count == count else { throw fail("attribute '\(name)' has \(v.count) values \(v), expected \(count)") }
        for x in v where x < minimum || x > 65536 {
            throw fail("attribute '\(name)' = \(v) is out of range")
        }
        return v
    }

    /// An axis attribute or input value, normalised to 0..<rank (negative counts from the end).
    func axis(_ a: Int, rank: Int, _ what: String) throws(ONNXImportError) -> Int {
        let v = a < 0 ? a + rank : a
        guard v >= 0, v < rank else { throw fail("\(what) \(a) is out of range for rank \(rank)") }
        return v
    }
}
