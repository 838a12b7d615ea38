#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// How image results are written.
public enum ResultFormat: String, Sendable, CaseIterable {
    /// An aligned table: FILE, RANK, PROB (or SCORE), CLASS.
    case text
    /// JSON Lines: one object per file, `{"file":…,"predictions":[{"rank","index","label","probability"|"score"}]}`
    /// or `{"file":…,"error":{"kind","message"}}`.
    case json
    /// RFC 4180 CSV: `file,rank,index,label,probability|score,error`, one row per class or error.
    case csv
}

/// Turns image results into the lines kiln-run prints (and any front end that wants the same text).
///
/// JSON strings are written by `JSONEncoder` (no escaping of our own; `/` left as is); the object layout and
/// key order are fixed as above, and a score is Swift's shortest round-trip text of the Float (`0.8234`,
/// `1.0`, `1e-05`), or `null` when it is not finite.
public struct ResultWriter {
    public var format: ResultFormat
    public var scores: OutputScores
    /// Width of the FILE column of the text table (the longest path).
    public var fileWidth: Int
    private let encoder: JSONEncoder

    public init(format: ResultFormat, scores: OutputScores, fileWidth: Int = 4) {
        self.format = format
        self.scores = scores
        self.fileWidth = fileWidth
        encoder = JSONEncoder()
        encoder.outputFormatting = [.withoutEscapingSlashes]
    }

    /// The header line (text and CSV), nil for JSON Lines.
    public func header() -> String? {
        switch format {
        case .text: return pad("FILE", fileWidth) + "  RANK  " + padLeft(scores == .probabilities ? "PROB" : "SCORE", 8) + "  CLASS"
        case .csv: return "file,rank,index,label,\(scores.rawValue),error"
        case .json: return nil
        }
    }

    /// The lines of one file's result.
    public func lines(file: String, _ result: Result<[Prediction], ClassifyError>) -> [String] {
        switch (format, result) {
        case (.text, .success(let predictions)):
            return predictions.enumerated().map { rank, p in
                pad(rank == 0 ? file : "", fileWidth) + "  " + pad(String(rank + 1), 4) + "  " + padLeft(scoreText(p.score), 8) + "  " + p.label
            }
        case (.text, .failure(let error)):
            return [pad(file, fileWidth) + "  error: " + error.message]
        case (.json, .success(let predictions)):
            let items = predictions.enumerated().map { rank, p in
                "{\"rank\":\(rank + 1),\"index\":\(p.index),\"label\":\(json(p.label)),\"\(scores.rawValue)\":\(p.score.isFinite ? "\(p.score)" : "null")}"
            }
            return ["{\"file\":\(json(file)),\"predictions\":[\(items.joined(separator: ","))]}"]
        case (.json, .failure(let error)):
            let kind = error.imageKind?.rawValue ?? "error"
            return ["{\"file\":\(json(file)),\"error\":{\"kind\":\(json(kind)),\"message\":\(json(error.message))}}"]
        case (.csv, .success(let predictions)):
            return predictions.enumerated().map { rank, p in
                [csvField(file), String(rank + 1), String(p.index), csvField(p.label), "\(p.score)", ""].joined(separator: ",")
            }
        case (.csv, .failure(let error)):
            return [[csvField(file), "", "", "", "", csvField(error.message)].joined(separator: ",")]
        }
    }

    /// Percent for probabilities ("82.34%"), Swift's Float text for other scores.
    func scoreText(_ v: Float) -> String {
        guard scores == .probabilities else { return String(v) }
        let hundredths = Int((Double(v) * 10000).rounded())
        let whole = hundredths / 100, frac = hundredths % 100
        return "\(whole).\(frac < 10 ? "0" : "")\(frac)%"
    }

    /// `s` as a JSON string, by JSONEncoder.
    func json(_ s: String) -> String {
        (try? encoder.encode(s)).map { String(decoding: $0, as: UTF8.self) } ?? "null"
    }
}

/// RFC 4180: quoted (quotes doubled) when it holds a comma, quote or line break. Scalars, not Characters:
/// "\r\n" is one Character, and a quote followed by a combining mark is another.
func csvField(_ s: String) -> String {
    let special: Set<Unicode.Scalar> = [",", "\"", "\n", "\r"]
    guard s.unicodeScalars.contains(where: special.contains) else { return s }
    var quoted = String.UnicodeScalarView()
    for u in s.unicodeScalars {
        if u == "\"" { quoted.append(u) }
        quoted.append(u)
    }
    return "\"" + String(quoted) + "\""
}

func pad(_ s: String, _ width: Int) -> String {
    s.count >= width ? s : s + String(repeating: " ", count: width - s.count)
}

func padLeft(_ s: String, _ width: Int) -> String {
    s.count >= width ? s : String(repeating: " ", count: width - s.count) + s
}
