"""The lists users get: business rules (pure numpy), the ranked lists publication stores and evaluation
scores, and the stored frames with reasons and the fallback.
"""
